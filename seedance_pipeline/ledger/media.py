"""Media already published: each file's URL, reused while it is still valid."""

from __future__ import annotations

import time

from .database import Database, sql


class PublishedMedia:
    """URLs of published local media, by content hash and publisher."""

    db: Database

    def published_url(self, sha256: str, publisher: str, max_age: float) -> str | None:
        with self.db.read() as db:
            row = db.execute(
                sql(
                    "SELECT url, published_at FROM published_media"
                    " WHERE sha256 = :sha AND files_url = :pub"
                ),
                {"sha": sha256, "pub": publisher},
            ).first()
        if row is None or time.time() - row.published_at > max_age:
            return None
        return row.url

    def record_published(self, sha256: str, publisher: str, url: str) -> None:
        with self.db.transaction() as db:
            db.execute(
                sql(
                    "INSERT INTO published_media (sha256, files_url, url, published_at)"
                    " VALUES (:sha, :pub, :url, :now) ON CONFLICT (sha256, files_url)"
                    " DO UPDATE SET url = excluded.url, published_at = excluded.published_at"
                ),
                {"sha": sha256, "pub": publisher, "url": url, "now": time.time()},
            )
