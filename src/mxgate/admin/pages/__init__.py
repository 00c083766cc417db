"""The admin centre's HTML pages (Jinja2 templates, htmx for partial updates; no JavaScript build).

Owns: assembling the page routers. app.py mounts this router behind guard.page_user, so every
page needs a session and every POST the session's CSRF token.
"""

from fastapi import APIRouter

from mxgate.admin.pages import connectors, held, mail, manage, objects, overview, verify

router = APIRouter(include_in_schema=False)
# manage before connectors/objects: its literal paths (/connectors/outbound/new) must win over {name}.
for _module in (overview, manage, connectors, objects, mail, held, verify):
    router.include_router(_module.router)
