"""Uploads stream straight into ``TRE_STORE_DIR/incoming/`` in chunks: memory stays bounded
whatever the size, and the size limit (``TRE_MAX_UPLOAD_BYTES``) is enforced while reading."""

import hashlib
import secrets
from pathlib import Path

from django.core.files.uploadedfile import UploadedFile
from django.core.files.uploadhandler import FileUploadHandler, SkipFile

from tre.errors import DomainError

from . import store

FIELD = "file"
MULTIPART_SLACK = 64 * 1024  # boundaries and part headers around the file in the request body


class UploadTooLarge(DomainError):
    status_code = 413

    def __init__(self, limit: int):
        super().__init__(f"the file is larger than the upload limit of {limit} bytes", limit_bytes=limit)


class IncomingFile(UploadedFile):
    """An upload already on disk in ``incoming/`` (the view never reads it into memory)."""

    def __init__(self, path: Path, name: str, size: int, sha256: str, content_type=None):
        super().__init__(file=None, name=name, content_type=content_type, size=size)
        self.path, self.sha256 = path, sha256

    def open(self, mode=None, *args, **kwargs):  # pragma: no cover - not used
        return open(self.path, mode or "rb")

    def close(self):
        pass


class IncomingUploadHandler(FileUploadHandler):
    """Writes the ``file`` part to ``incoming/<random>.upload``, hashing and counting as it goes."""

    def __init__(self, request=None, *, limit: int):
        super().__init__(request)
        self.limit = limit
        self.path: Path | None = None
        self.fh = None
        self.size = 0
        self.digest = None
        self.done = False

    def new_file(self, field_name, file_name, content_type, content_length, charset=None, content_type_extra=None):
        super().new_file(field_name, file_name, content_type, content_length, charset, content_type_extra)
        if field_name != FIELD or self.done or self.path is not None:
            raise SkipFile()
        if content_length is not None and content_length > self.limit:
            raise UploadTooLarge(self.limit)
        try:
            self.path = store.incoming_dir() / f"{secrets.token_hex(16)}.upload"
            self.fh = open(self.path, "xb")
        except OSError as exc:  # full, read-only or unwritable store: a 503 naming it, nothing kept
            self.path = None
            raise store.unavailable(exc) from None
        self.digest = hashlib.sha256()

    def receive_data_chunk(self, raw_data, start):
        if self.fh is None:
            return None
        self.size += len(raw_data)
        if self.size > self.limit:
            self.cleanup()
            raise UploadTooLarge(self.limit)
        try:
            self.fh.write(raw_data)
        except OSError as exc:
            self.cleanup()
            raise store.unavailable(exc) from None
        self.digest.update(raw_data)
        return None

    def file_complete(self, file_size):
        if self.fh is None:
            return None
        self.fh.flush()
        self.fh.close()
        self.fh = None
        self.done = True
        return IncomingFile(self.path, self.file_name or "upload", self.size, self.digest.hexdigest(), self.content_type)

    def upload_interrupted(self):
        # Django also calls this when a *later* part was skipped: keep a file already complete
        if self.fh is not None:
            self.cleanup()

    def cleanup(self):
        if self.fh is not None:
            try:
                self.fh.close()
            except OSError:
                pass
            self.fh = None
        if self.path is not None:
            store.remove_quietly(self.path)
        self.path = None
        self.done = False


def copy_to_incoming(upload, *, limit: int) -> IncomingFile:
    """For an upload Django parsed before our handler could be installed: copy it in chunks."""
    try:
        path = store.incoming_dir() / f"{secrets.token_hex(16)}.upload"
    except OSError as exc:
        raise store.unavailable(exc) from None
    digest, size = hashlib.sha256(), 0
    try:
        with open(path, "xb") as out:
            for chunk in upload.chunks(1024 * 1024):
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge(limit)
                out.write(chunk)
                digest.update(chunk)
    except OSError as exc:
        store.remove_quietly(path)
        raise store.unavailable(exc) from None
    except BaseException:
        store.remove_quietly(path)
        raise
    return IncomingFile(path, upload.name or "upload", size, digest.hexdigest(), getattr(upload, "content_type", None))
