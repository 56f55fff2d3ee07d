"""Site-wide request checks."""
from django.http import JsonResponse


def refuse_nul_characters(get_response):
    """400 for a request whose path or query holds a NUL character: PostgreSQL cannot take one in a query
    (psycopg raises, which was a 500), so no view has to check for it."""

    def middleware(request):
        if "\x00" in request.path or any("\x00" in key or any("\x00" in v for v in values)
                                         for key, values in request.GET.lists()):
            return JsonResponse({"detail": "NUL characters are not allowed in the path or the query"}, status=400)
        return get_response(request)

    return middleware
