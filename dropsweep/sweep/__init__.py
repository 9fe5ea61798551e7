"""The sweep file read into frozen sections, and the search space it declares."""
