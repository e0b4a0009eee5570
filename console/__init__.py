"""voice-console: an operator console for voice-AI agents (Vapi, Retell AI, Twilio)."""

__version__ = "0.1.0"
APP_NAME = "voice-console"  # here, not in config: light commands need it without pydantic
