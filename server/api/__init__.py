"""The JSON API under /api/v1: problem details, authentication, the OpenAPI document."""
