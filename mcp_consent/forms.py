"""Forms of mcp_consent: the operator's client registration in the admin."""

from __future__ import annotations

from typing import Any

from django import forms

from .app_settings import app_settings
from .models import RegistrationSource
from .registration import ClientMetadata, RegistrationError, clean_client_metadata


class AdminClientRegistrationForm(forms.Form):
    """An operator registers a client: same policy as DCR and CIMD, verified by the operator."""

    client_name = forms.CharField(max_length=255)
    redirect_uris = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3, "cols": 80}),
        help_text="One per line. https, or http on 127.0.0.1 / [::1] / localhost for native apps.",
    )
    confidential = forms.BooleanField(
        required=False,
        help_text="Issue a client secret (server-side clients). Leave off for public MCP clients.",
    )
    client_uri = forms.URLField(required=False, assume_scheme="https")

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if self.errors:
            return data
        try:
            data["metadata"] = clean_client_metadata(
                {
                    "client_name": data["client_name"],
                    "redirect_uris": [
                        line.strip() for line in data["redirect_uris"].splitlines() if line.strip()
                    ],
                    "token_endpoint_auth_method": "client_secret_basic"
                    if data.get("confidential")
                    else "none",
                    "client_uri": data.get("client_uri") or "",
                    "grant_types": ["authorization_code", "refresh_token"],
                },
                RegistrationSource.ADMIN,
            )
        except RegistrationError as error:
            raise forms.ValidationError(error.description) from None
        if len(data["client_name"]) > app_settings.CLIENT_NAME_MAX_LENGTH:
            raise forms.ValidationError("client name is too long")
        return data

    @property
    def metadata(self) -> ClientMetadata:
        return self.cleaned_data["metadata"]
