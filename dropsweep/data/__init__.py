"""The rows a sweep trains on: data sets, their readers and files, and how rows split into what trains and what scores."""
