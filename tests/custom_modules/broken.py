raise RuntimeError("this module refuses to import")
