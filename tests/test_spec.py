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


# -- an upper-case 40-hex revision is a commit, normalised to lower case, in every form --

UPPER = COMMIT.upper()


@pytest.mark.parametrize("item, repo_type", [
    (f"org/m:{UPPER}", "model"), (f"hf://org/m@{UPPER}", "model"), (f"hf://datasets/org/m@{UPPER}", "dataset"),
    (f"https://huggingface.co/org/m:{UPPER}", "model"), (f"org/m:{COMMIT[:20].upper()}{COMMIT[20:]}", "model"),
])
def test_an_upper_case_commit_is_a_commit_in_every_form(item, repo_type):
    specs, problems = parse_list(item, repo_type, "X")
    assert problems == [] and specs == [RepoSpec(repo_type, "org/m", COMMIT)]
    assert specs[0].is_commit
    assert parse_specs([item], repo_type) == (RepoSpec(repo_type, "org/m", COMMIT),)


def test_an_upper_case_commit_in_rm_and_the_api():
    from preloader.api import settings_for
    from preloader.spec import parse_removals

    assert parse_removals(["org/a"], "model", UPPER) == ((), (RepoSpec("model", "org/a", COMMIT),))
    assert parse_removals([f"org/a:{UPPER}"], "model") == ((), (RepoSpec("model", "org/a", COMMIT),))
    assert settings_for([RepoSpec("model", "org/a", UPPER)], cache_dir="/c").models == (
        RepoSpec("model", "org/a", COMMIT),)


def test_a_39_or_41_hex_revision_is_a_branch_name_kept_as_written():
    specs, _ = parse_list(f"org/m:{UPPER[:39]},org/m:{UPPER}A", "model", "X")
    assert [s.revision for s in specs] == [UPPER[:39], UPPER + "A"] and not any(s.is_commit for s in specs)


# -- SPEC arguments: an hf://datasets/... (or https://<host>/datasets/...) one is a dataset without --dataset --

def test_spec_arguments_take_their_type_from_the_form():
    from preloader.cli.base import parse_spec_args

    args = ["org/model", "hf://datasets/org/data@v1.0", "https://hf.co/datasets/org/d2", "hf://models/org/m2"]
    assert parse_spec_args(args, False) == (
        RepoSpec("model", "org/model"), RepoSpec("dataset", "org/data", "v1.0"), RepoSpec("dataset", "org/d2"),
        RepoSpec("model", "org/m2"))
    assert parse_spec_args(["org/d", "hf://datasets/org/e"], True) == (RepoSpec("dataset", "org/d"),
                                                                        RepoSpec("dataset", "org/e"))
    with pytest.raises(ConfigError) as info:  # --dataset says what they are: a model URI contradicts it
        parse_spec_args(["hf://models/org/m"], True)
    assert "names a model, not a dataset" in str(info.value)


def test_env_lists_still_refuse_a_dataset_uri_among_models():
    _, problems = parse_list("hf://datasets/org/d", "model", "RUNPOD_HUGGINGFACE_MODEL")
    assert problems == ["RUNPOD_HUGGINGFACE_MODEL item 1 'hf://datasets/org/d': names a dataset, not a model"]


def test_status_with_hf_specs_of_both_types_as_the_readme_says(tmp_path):
    """docs/settings.md: `preloader status` with hf:// specs of both types (no network: nothing is cached, exit 1)."""
    import json
    import os

    from conftest import run_preloader

    env = dict(os.environ, PRELOADER_CACHE_DIR=str(tmp_path / "hub"))
    proc = run_preloader(["status", "--json", "hf://org/model", "hf://datasets/org/data@v1.0"], env)
    assert proc.returncode == 1, proc.stderr
    assert [(i["repo_type"], i["repo_id"], i["revision"]) for i in json.loads(proc.stdout)["repos"]] == [
        ("model", "org/model", "main"), ("dataset", "org/data", "v1.0")]


def test_pull_a_model_and_a_dataset_uri_in_one_command_as_the_readme_says(hub, cache, mirrors):
    """README: `preloader pull org/model hf://datasets/org/data@v1.0`."""
    from conftest import preloader_env, run_preloader

    proc = run_preloader(["pull", "org/tiny-model", "hf://datasets/org/tiny-data@v1.0"], preloader_env(hub, cache))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        str(cache / "models--org--tiny-model" / "snapshots" / mirrors.sha("model", "org/tiny-model", "main")),
        str(cache / "datasets--org--tiny-data" / "snapshots" / mirrors.sha("dataset", "org/tiny-data", "v1.0"))]


# -- thousands of bad items: ONE short line naming the first five and counting the rest --

def test_thousands_of_bad_items_give_one_short_line():
    with pytest.raises(ConfigError) as info:
        parse_specs([f"bad{n}" for n in range(3000)], "model")
    message = str(info.value)
    assert message == ("invalid repo spec: " + "; ".join(
        f"argument item {n + 1} 'bad{n}': no \"/\" between user and name" for n in range(5))
        + "; ... and 2995 more; expected user/name[:revision]")


def test_thousands_of_bad_items_in_an_env_var_give_one_short_line():
    from preloader.config import Settings

    with pytest.raises(ConfigError) as info:
        Settings.load({"RUNPOD_HUGGINGFACE_MODEL": ",".join(["x" * 500] * 3000)})
    message = str(info.value)
    assert message.endswith("; ... and 2995 more") and len(message) < 1200
    assert message.count("(500 characters)") == 5  # each item cut, with its length
