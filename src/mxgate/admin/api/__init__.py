"""The REST API, /api/v1: every resource requires a bearer API token (`mxgate admin token new`) or
an admin session cookie plus X-CSRF-Token on writes (guard.api_user). OpenAPI (behind the same
authentication) at /api/v1/openapi.json, and Swagger UI at /api/v1/docs.

Owns: assembling the resource modules under one prefix and one authentication dependency.
"""

from fastapi import APIRouter, Depends

from mxgate.admin.api import held, mail, manage, policy, system
from mxgate.admin.guard import api_user

router = APIRouter(prefix="/api/v1", dependencies=[Depends(api_user)])
router.include_router(policy.router)
router.include_router(mail.router)
router.include_router(held.router)
router.include_router(system.router)
router.include_router(manage.router)
