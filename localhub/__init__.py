"""Local stand-in for the Hugging Face Hub: git mirrors, olah, a counting proxy.

Test/benchmark helper only (not part of the preloader product)::

    mirrors = build_mirrors(tmp)
    with start_olah(mirrors.mirrors_dir, tmp / "olah") as olah, HubProxy(olah.url) as hub:
        snapshot_download("org/tiny-model", endpoint=hub.url, token=False, ...)
        assert hub.file_gets()[("org/tiny-model", "config.json")] == 1
"""

from localhub.faults import (
    Action,
    CutAfter,
    Drip,
    HostileListing,
    IgnoreRange,
    RedirectToCdn,
    RepoInfoFromRevision,
    Stall,
    StallAfter,
    Status,
    WrongBytes,
    is_repo_info,
)
from localhub.mirrors import Mirrors, bert_files, build_mirrors
from localhub.olah import Olah, OlahServer, find_olah_cli, free_port, start_mirror, start_olah
from localhub.proxy import HubProxy, Rule
from localhub.records import Record, RequestLog, parse_resolve

__all__ = [
    "RepoInfoFromRevision",
    "is_repo_info",
    "Action",
    "CutAfter",
    "Drip",
    "HostileListing",
    "IgnoreRange",
    "RedirectToCdn",
    "Stall",
    "StallAfter",
    "Status",
    "WrongBytes",
    "Mirrors",
    "bert_files",
    "build_mirrors",
    "Olah",
    "OlahServer",
    "find_olah_cli",
    "free_port",
    "start_mirror",
    "start_olah",
    "HubProxy",
    "Record",
    "RequestLog",
    "Rule",
    "parse_resolve",
]
