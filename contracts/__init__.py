"""The messages Packages consumes and publishes, and their topics: what services share."""
