"""`python -m tests.gcs_emulator --port P --bucket B`: gcp-storage-emulator (PyPI) with three
parts of the GCS JSON API it lacks and tensorstore relies on: media downloads report
`x-goog-generation` and honour `ifGenerationMatch` / `ifGenerationNotMatch` (412 / 304), and
media uploads honour `ifGenerationMatch` (0: only if absent), which OCDBT (orbax's checkpoint
format) needs; listings honour `startOffset` / `endOffset`, which tensorstore's DeleteRange
(`delete_existing`) lists by; without it a store's arrays delete each other. Everything else
is the emulator's own."""

from __future__ import annotations

import argparse
import json
import logging
import threading
from http import HTTPStatus

from gcp_storage_emulator import server
from gcp_storage_emulator.exceptions import NotFound
from gcp_storage_emulator.handlers import objects


def _generation(storage, bucket: str, name: str) -> str | None:
    try:
        return str(storage.get_file_obj(bucket, name)["generation"])
    except NotFound:
        return None


def _query(request, key: str) -> str | None:
    values = request.query.get(key)
    return values[0] if values else None


def _download(original):
    def download(request, response, storage, *args, **kwargs):
        gen = _generation(storage, request.params["bucket_name"], request.params["object_id"])
        if gen is not None:
            response["x-goog-generation"] = gen
            if _query(request, "ifGenerationNotMatch") == gen:
                response.status = HTTPStatus.NOT_MODIFIED
                return None
            match = _query(request, "ifGenerationMatch")
            if match is not None and match != gen:
                response.status = HTTPStatus.PRECONDITION_FAILED
                return None
        return original(request, response, storage, *args, **kwargs)

    return download


def _insert(original):
    def insert(request, response, storage, *args, **kwargs):
        match, name = _query(request, "ifGenerationMatch"), _query(request, "name")
        if match is not None and name is not None:
            gen = _generation(storage, request.params["bucket_name"], name)
            if (gen or "0") != match:
                response.status = HTTPStatus.PRECONDITION_FAILED
                return None
        return original(request, response, storage, *args, **kwargs)

    return insert


def _ls(original):
    def ls(request, response, storage, *args, **kwargs):
        out = original(request, response, storage, *args, **kwargs)
        start, end = _query(request, "startOffset"), _query(request, "endOffset")
        if response.status == HTTPStatus.OK and (start or end):
            listing = json.loads(response._content)  # the emulator's Response keeps its body
            listing["items"] = [o for o in listing.get("items") or []
                                if (not start or o["name"] >= start)
                                and (not end or o["name"] < end)]
            response.json(listing)
        return out

    return ls


def patch() -> None:
    replacements = {objects.download: _download(objects.download),
                    objects.insert: _insert(objects.insert), objects.ls: _ls(objects.ls)}
    for _, handlers in server.HANDLERS:
        for method, fn in list(handlers.items()):
            handlers[method] = replacements.get(fn, fn)
    objects.download, objects.insert = replacements[objects.download], replacements[objects.insert]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bucket", required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)  # one line per request, into the test's log
    patch()
    srv = server.create_server("localhost", args.port, in_memory=True,
                               default_bucket=args.bucket)
    srv.start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
