"""HTTP responses are not stored: they keep the request, with its Authorization header.

Real requests against a real server on 127.0.0.1 (``http.server`` in a thread), made with
requests and httpx where they are installed.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from persistmemo import PersistmemoWarning, Store, UnstorableValue, memo
from persistmemo._memo.responses import is_response_type

TOKEN = "Bearer s3cret-token-7f3a"


class Server:
    """A JSON answer to every GET; counts the requests it answered."""

    def __init__(self) -> None:
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.requests += 1
                status = 401 if self.path.startswith("/denied") else 200
                body = json.dumps({"path": self.path}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.requests = 0
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    running = Server()
    running.thread.start()
    yield running
    running.httpd.shutdown()
    running.httpd.server_close()


def requests_get(url: str) -> Any:
    requests = pytest.importorskip("requests")
    return requests.get(url, headers={"Authorization": TOKEN}, timeout=10)


def httpx_get(url: str) -> Any:
    httpx = pytest.importorskip("httpx")
    return httpx.get(url, headers={"Authorization": TOKEN}, timeout=10)


CLIENTS = [pytest.param(requests_get, id="requests"), pytest.param(httpx_get, id="httpx")]


def token_on_disk(directory: Path) -> bool:
    return any(
        b"s3cret-token" in path.read_bytes() for path in directory.rglob("*") if path.is_file()
    )


@pytest.mark.parametrize("get", CLIENTS)
def test_a_response_is_returned_not_stored_with_one_warning(
    get: Callable[[str], Any], server: Server, tmp_path: Path
) -> None:
    get(server.url)  # skips here when the client is not installed
    store = Store(tmp_path / "store")

    @memo(store=store)
    def fetch(url: str) -> Any:
        return get(url)

    before = server.requests
    with pytest.warns(PersistmemoWarning) as caught:
        first = fetch(server.url + "/items")
        second = fetch(server.url + "/items")
    assert first.status_code == second.status_code == 200
    assert first.json() == {"path": "/items"}
    assert server.requests == before + 2  # not stored: computed again
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1
    assert "Response" in messages[0]
    assert all(word in messages[0] for word in (".json()", ".content", ".text"))
    store.close()
    assert not token_on_disk(tmp_path / "store")


@pytest.mark.parametrize("get", CLIENTS)
def test_a_response_inside_a_container_is_refused_too(
    get: Callable[[str], Any], server: Server, store: Store
) -> None:
    get(server.url)

    @memo(store=store)
    def fetch_all(urls: tuple[str, ...]) -> dict[str, Any]:
        frame = pd.DataFrame({"url": list(urls)})  # searched too: holds no response
        return {"frame": frame, "responses": [get(url) for url in urls], "count": len(urls)}

    urls = (server.url + "/a", server.url + "/b")
    before = server.requests
    with pytest.warns(PersistmemoWarning, match="contains a .*Response"):
        result = fetch_all(urls)
        fetch_all(urls)
    assert [r.json()["path"] for r in result["responses"]] == ["/a", "/b"]
    assert server.requests == before + 4  # not stored: computed again


def test_what_a_response_offers_is_stored(server: Server, store: Store) -> None:
    requests_get(server.url)

    @memo(store=store)
    def fetch(url: str) -> dict[str, Any]:
        response = requests_get(url)
        return {"status": response.status_code, "json": response.json()}

    before = server.requests
    url = server.url + "/x"
    assert fetch(url) == fetch(url) == {"status": 200, "json": {"path": "/x"}}
    assert server.requests == before + 1


def test_a_strict_store_raises_the_refusal(server: Server, tmp_path: Path) -> None:
    requests_get(server.url)
    with Store(tmp_path / "strict", strict=True) as strict:

        @memo(store=strict)
        def fetch(url: str) -> Any:
            return requests_get(url)

        with pytest.raises(UnstorableValue, match=r"requests\.models\.Response.*\.json\(\)"):
            fetch(server.url + "/x")


@pytest.mark.parametrize("get", CLIENTS)
def test_a_response_in_an_object_array_or_a_frame_column_is_refused(
    get: Callable[[str], Any], server: Server, tmp_path: Path
) -> None:
    import numpy as np

    store = Store(tmp_path / "store")
    get(server.url)

    @memo(store=store)
    def fetch(url: str, shape: str) -> Any:
        response = get(url)
        if shape == "array":
            holder = np.empty(1, dtype=object)
            holder[0] = response
            return holder
        return pd.DataFrame({"numbers": [1.5], "response": [response]})

    with pytest.warns(PersistmemoWarning, match="contains a .*Response"):  # one per store
        for shape in ("array", "frame"):
            fetch(server.url, shape)
            assert fetch.info(server.url, shape) is None  # type: ignore[attr-defined]
    store.close()
    assert not token_on_disk(tmp_path / "store")


def test_a_request_or_a_session_is_refused(server: Server, tmp_path: Path) -> None:
    requests = pytest.importorskip("requests")
    store = Store(tmp_path / "store")

    @memo(store=store)
    def prepared(kind: str, url: str) -> Any:
        if kind == "request":
            return requests_get(url).request
        session = requests.Session()
        session.headers["Authorization"] = TOKEN
        return session

    with pytest.warns(PersistmemoWarning, match="keeps a request's headers"):
        for kind in ("request", "session"):
            prepared(kind, server.url)
            assert prepared.info(kind, server.url) is None  # type: ignore[attr-defined]
    store.close()
    assert not token_on_disk(tmp_path / "store")


def test_an_http_error_shared_with_waiters_leaves_the_token_out(
    server: Server, tmp_path: Path
) -> None:
    requests = pytest.importorskip("requests")
    store = Store(tmp_path / "store")

    @memo(store=store, lock="always")
    def fetch(url: str) -> Any:
        response = requests_get(url)
        response.raise_for_status()
        return response.json()

    with pytest.raises(requests.HTTPError):
        fetch(server.url + "/denied?api_key=QUERYSECRET")
    store.close()
    assert not token_on_disk(tmp_path / "store")
    stored = b"".join(p.read_bytes() for p in (tmp_path / "store").rglob("*") if p.is_file())
    assert b"QUERYSECRET" not in stored  # the error's text names the URL: not shared


def test_a_class_is_known_by_its_module_and_name() -> None:
    def made(module: str, name: str, bases: tuple[type, ...] = ()) -> type:
        return type(name, bases, {"__module__": module})

    assert is_response_type(made("requests.models", "Response"))
    assert is_response_type(made("httpx", "Response"))
    assert is_response_type(made("app", "Cached", (made("httpx._models", "Response"),)))
    assert not is_response_type(made("app.http", "Response"))
    assert is_response_type(made("requests.models", "PreparedRequest"))
    assert is_response_type(made("requests.sessions", "Session"))
    assert is_response_type(made("httpx", "Client"))
    assert not is_response_type(made("requests.models", "Model"))
    assert not is_response_type(made("requestsx", "Response"))
