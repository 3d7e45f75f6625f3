"""Invoicing: invoices that sell packages, and their payment and voiding."""
