"""Persona: behaviour logs -> user profiles -> personalized ranking served through ONNX."""

__version__ = "0.1.0"
