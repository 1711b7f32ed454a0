"""Client-metadata policy shared by every way a client comes to exist: DCR, CIMD, the admin.

DOT 3.4 validates syntax only (its DCR view accepted ``http://evil.example.com/cb``,
``http://127.0.0.1:*/cb`` and public clients with the implicit or password grant); this
module adds the rules DOT leaves open:
``http`` only on loopback (DCR-11, BCP-14), no dangerous schemes (URL-02, DCR-13), no
wildcards or port patterns (DCR-14, CD-32), absolute URIs without fragments (DCR-12), only
the code and refresh grants (DCR-15), consistent auth methods (DCR-16, CIMD-06),
length-limited self-asserted names (DCR-19). The clean result is what gets registered and
what the registration response echoes (DCR-04, DCR-05).
"""

from .budget import BudgetRefusal, registration_budget_refusal
from .cimd import (
    CIMDFetchPolicy,
    CIMDMetadataFetcher,
    authorizing_request,
    cimd_domain_blocked,
    fetched_cimd_metadata,
)
from .errors import RegistrationError
from .metadata import (
    SUPPORTED_AUTH_METHODS,
    SUPPORTED_GRANT_TYPES,
    ClientMetadata,
    clean_client_metadata,
)
from .redirect_uris import (
    BROWSER_INTERNAL_SCHEMES,
    DANGEROUS_SCHEMES,
    LOOPBACK_HOSTS,
    MAX_URI_LENGTH,
    NOT_REDIRECT_SCHEMES,
    is_loopback_host,
    is_private_use_scheme,
    scheme_may_redirect,
    validate_redirect_uri,
)

__all__ = [
    "BROWSER_INTERNAL_SCHEMES",
    "DANGEROUS_SCHEMES",
    "LOOPBACK_HOSTS",
    "MAX_URI_LENGTH",
    "NOT_REDIRECT_SCHEMES",
    "SUPPORTED_AUTH_METHODS",
    "SUPPORTED_GRANT_TYPES",
    "BudgetRefusal",
    "CIMDFetchPolicy",
    "CIMDMetadataFetcher",
    "ClientMetadata",
    "RegistrationError",
    "authorizing_request",
    "cimd_domain_blocked",
    "clean_client_metadata",
    "fetched_cimd_metadata",
    "is_loopback_host",
    "is_private_use_scheme",
    "registration_budget_refusal",
    "scheme_may_redirect",
    "validate_redirect_uri",
]
