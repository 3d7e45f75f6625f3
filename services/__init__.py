"""The four Packages services, the kernel they share and the read API."""
