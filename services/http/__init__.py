"""The read API the platform asks: records, balances and bookings' packages."""
