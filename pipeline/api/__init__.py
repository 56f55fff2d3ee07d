"""REST API: ALeRCE's ZTF API v1 routes (so the public ``alerce`` client works) with an OpenAPI schema."""
