"""The HTTP wire format: parsing request bodies into readings, the OpenAPI schemas, writing answers."""
