"""Screens and dialogs of the operator console, one module per screen."""
