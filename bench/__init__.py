"""The redemption benchmark: ours against a raw pass-through and a naive FastStream peer."""
