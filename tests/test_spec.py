import pytest

from preloader.errors import ConfigError
from preloader.spec import RepoSpec, dedupe, parse_list, parse_specs

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    "text, expected",
    [
        ("org/model", [RepoSpec("model", "org/model", "main")]),
        (" org/model , org/other:dev ", [RepoSpec("model", "org/model"), RepoSpec("model", "org/other", "dev")]),
        ("org/m:v1.0", [RepoSpec("model", "org/m", "v1.0")]),
        (f"org/m:{COMMIT}", [RepoSpec("model", "org/m", COMMIT)]),
        ("org/m:refs/pr/1", [RepoSpec("model", "org/m", "refs/pr/1")]),
        ("Org_1/m.v2-x", [RepoSpec("model", "Org_1/m.v2-x")]),
        ("", []),
        ("   ", []),
    ],
)
def test_parse_list_accepts(text, expected):
    specs, problems = parse_list(text, "model", "RUNPOD_HUGGINGFACE_MODEL")
    assert problems == []
    assert specs == expected


@pytest.mark.parametrize(
    "item, problem",
    [
        ("org", 'no "/" between user and name'),
        ("a/b/c", 'more than one "/"'),
        ("/name", "empty user"),
        ("org/", "empty name"),
        ("org/na me", "name has characters other than letters, digits, '-', '_' and '.'"),
        ("org/na$me", "name has characters other than letters, digits, '-', '_' and '.'"),
        ("org/a..b", "name contains '..' or '--'"),
        ("org/a--b", "name contains '..' or '--'"),
        ("../etc", "user contains '..' or '--'"),
        ("org/-model", "name starts or ends with '-' or '.'"),
        ("org/model.", "name starts or ends with '-' or '.'"),
        (".org/model", "user starts or ends with '-' or '.'"),
        ("org/" + "m" * 97, "name is longer than 96 characters"),
        ("org/m:", "empty revision"),
        ("org/m:a..b", "revision contains '..', '//' or '@{'"),
        ("org/m:a b", "revision has a space, control character or one of ~^:?*[\\"),
        ("org/m:x:y", "revision has a space, control character or one of ~^:?*[\\"),
        ("org/m:-dev", "revision starts with '-' or '/', or ends with '/' or '.'"),
        ("org/m:dev/", "revision starts with '-' or '/', or ends with '/' or '.'"),
        ("org/m:dev.lock", "a part of the revision starts with '.' or ends with '.lock'"),
        ("org/m:" + "r" * 256, "revision is longer than 255 characters"),
    ],
)
def test_parse_list_rejects_with_exact_message(item, problem):
    specs, problems = parse_list(f"org/good,{item}", "model", "RUNPOD_HUGGINGFACE_MODEL")
    assert specs == [RepoSpec("model", "org/good")]
    quoted = repr(item) if len(item) <= 80 else f"{item[:80]!r}... ({len(item)} characters)"  # long items are cut
    assert problems == [f"RUNPOD_HUGGINGFACE_MODEL item 2 {quoted}: {problem}"]


def test_every_bad_entry_is_reported_with_its_position():
    specs, problems = parse_list("org/a,,bad,org/b:..", "dataset", "RUNPOD_HUGGINGFACE_DATASET")
    assert specs == [RepoSpec("dataset", "org/a")]
    assert problems == [
        "RUNPOD_HUGGINGFACE_DATASET item 2 '': empty item",
        "RUNPOD_HUGGINGFACE_DATASET item 3 'bad': no \"/\" between user and name",
        "RUNPOD_HUGGINGFACE_DATASET item 4 'org/b:..': revision contains '..', '//' or '@{'",
    ]


def test_duplicates_collapse_keeping_order():
    specs, _ = parse_list("org/b, org/a, org/b:main, org/a:dev", "model", "X")
    assert dedupe(specs) == (RepoSpec("model", "org/b"), RepoSpec("model", "org/a"), RepoSpec("model", "org/a", "dev"))


def test_parse_specs_raises_one_error_for_all():
    with pytest.raises(ConfigError) as info:
        parse_specs(["org/ok", "nope", "x/y:"], "model")
    assert info.value.exit_code == 78
    assert str(info.value) == (
        "invalid repo spec: argument item 2 'nope': no \"/\" between user and name; "
        "argument item 3 'x/y:': empty revision; expected user/name[:revision]"
    )


@pytest.mark.parametrize("item, repo_type, expected", [
    ("hf://org/m", "model", RepoSpec("model", "org/m")),
    ("hf://models/org/m@dev", "model", RepoSpec("model", "org/m", "dev")),
    ("hf://datasets/org/d@v1.0", "dataset", RepoSpec("dataset", "org/d", "v1.0")),
    ("hf://org/d", "dataset", RepoSpec("dataset", "org/d")),
    (f"hf://org/m@{COMMIT}", "model", RepoSpec("model", "org/m", COMMIT)),
    ("hf://org/m@refs/pr/1", "model", RepoSpec("model", "org/m", "refs/pr/1")),
    ("https://huggingface.co/org/m", "model", RepoSpec("model", "org/m")),
    ("https://huggingface.co/org/m:dev", "model", RepoSpec("model", "org/m", "dev")),
    ("https://hf-mirror.example/org/m/", "model", RepoSpec("model", "org/m")),
    ("https://huggingface.co/datasets/org/d:v1.0", "dataset", RepoSpec("dataset", "org/d", "v1.0")),
])
def test_uri_and_url_forms(item, repo_type, expected):
    specs, problems = parse_list(item, repo_type, "X")
    assert (specs, problems) == ([expected], [])


@pytest.mark.parametrize("item, repo_type, problem", [
    ("hf://datasets/org/d", "model", "names a dataset, not a model"),
    ("https://huggingface.co/datasets/org/d", "model", "names a dataset, not a model"),
    ("https://huggingface.co/org/m", "dataset", "names a model, not a dataset"),
    ("hf://spaces/org/s", "model", "spaces are not preloaded"),
    ("hf://org/m@", "model", "empty revision"),
    ("hf://org", "model", 'no "/" between user and name'),
    ("https:///org/m", "model", "a URL needs a host and a path user/name[:revision], no query or fragment"),
    ("https://huggingface.co/org/m?x=1", "model", "a URL needs a host and a path user/name[:revision], no query or fragment"),
    ("https://huggingface.co/org/m/tree/main", "model", 'more than one "/"'),
    ("hf://org/m@bad..rev", "model", "revision contains '..', '//' or '@{'"),
])
def test_uri_and_url_forms_errors(item, repo_type, problem):
    source = "RUNPOD_HUGGINGFACE_MODEL" if repo_type == "model" else "RUNPOD_HUGGINGFACE_DATASET"
    specs, problems = parse_list(f"org/ok,{item}", repo_type, source)
    assert problems == [f"{source} item 2 {item!r}: {problem}"]
    assert len(specs) == 1


def test_rm_of_a_url_without_revision_is_the_whole_repo():
    from preloader.spec import parse_removals

    whole, single = parse_removals(["https://huggingface.co/org/a", "hf://org/b@dev"], "model")
    assert (whole, single) == ((RepoSpec("model", "org/a"),), (RepoSpec("model", "org/b", "dev"),))
