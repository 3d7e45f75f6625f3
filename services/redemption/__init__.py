"""Redemption: bookings redeem sessions; no-shows and cancellations give them back."""
