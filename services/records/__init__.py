"""Records: the packages clients own, their balances, edits and expiry."""
