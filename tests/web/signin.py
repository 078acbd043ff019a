"""Signing in through the form as a browser does (cookie jar, hidden CSRF field)."""

from __future__ import annotations

import re

import httpx

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def form_csrf(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = CSRF.search(html)
    assert match, "no CSRF field on the page"
    return match.group(1)


def sign_in(client: httpx.Client, token: str) -> httpx.Response:
    """GET the form, POST the token with its CSRF field; the client keeps the cookies."""
    page = client.get("/signin")
    return client.post("/signin", data={"token": token, "csrf_token": form_csrf(page.text)})
