"""The OpenAI Chat Completions surface (POST /v1/chat/completions, GET /v1/models): its
schemas, its error shape, the conversion to and from the native chat service, its stream."""
