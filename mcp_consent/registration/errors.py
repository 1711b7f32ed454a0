"""The error every registration policy check raises (RFC 7591 §3.2.2)."""

from __future__ import annotations


class RegistrationError(Exception):
    """A registration request that RFC 7591 §3.2.2 answers with a 400 error."""

    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description

    def as_dict(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}
