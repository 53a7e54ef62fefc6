"""Health and readiness endpoints, for container healthchecks and orchestrator probes."""

from django.http import HttpRequest, JsonResponse

from core.readiness import CHECKS, failing_dependencies


async def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process serves. Touches no dependency, so a database outage never restarts it."""
    return JsonResponse({"status": "ok"})


async def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: the database and the channel layer each answer a real round trip."""
    failing = await failing_dependencies()
    checks = {name: ("failing" if name in failing else "ok") for name in CHECKS}
    if failing:
        return JsonResponse({"status": "unavailable", "checks": checks, "errors": failing}, status=503)
    return JsonResponse({"status": "ok", "checks": checks})
