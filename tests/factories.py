"""factory_boy factories. Clients are created through the real registration flow."""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth import get_user_model

from mcp_consent.flows import clients
from mcp_consent.models import MCPClient, RegistrationSource
from mcp_consent.registration import clean_client_metadata


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"user{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")


class MCPClientFactory(factory.Factory):
    """A registered client: ``MCPClientFactory(redirect_uris=[...], client_name=...)``.

    ``source`` is DCR by default (self-registered, unverified); ADMIN gives a verified one.
    Goes through registration policy + clients.register_client like a real registration.
    """

    class Meta:
        model = MCPClient

    redirect_uris = factory.LazyFunction(lambda: ["https://app.example/cb"])
    client_name = "Acme Agent"
    token_endpoint_auth_method = "none"
    source = RegistrationSource.DCR

    @classmethod
    def _create(cls, model_class: type, **kwargs: Any) -> MCPClient:
        source = kwargs.pop("source")
        metadata = clean_client_metadata(kwargs, source)
        registered = clients.register_client(metadata, source)
        client = registered.client
        client.registered = registered  # type: ignore[attr-defined]
        return client

    @classmethod
    def _build(cls, model_class: type, **kwargs: Any) -> MCPClient:
        return cls._create(model_class, **kwargs)
