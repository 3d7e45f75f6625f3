"""Catalog: which businesses may sell packages, and the packages themselves."""
