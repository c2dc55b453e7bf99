"""Model sources of ``from_hparams``: a folder, a bundled name or a hub id.

:meth:`speechbrain_elbo.inference.DiffusionEnhancement.from_hparams` takes
its ``source`` the way SpeechBrain's own interfaces do, and
:func:`resolve_source` decides once which kind it is:

1. an existing local folder: loaded where it is;
2. the name of a model bundled with the package
   (:func:`speechbrain_elbo.pretrained.available`);
3. otherwise a string ``org/name`` is a Hugging Face Hub id:
   :func:`fetch_from_hub` fetches ``hyperparams.yaml`` through SpeechBrain's
   :func:`speechbrain.utils.fetching.fetch` (which calls
   ``huggingface_hub.hf_hub_download``, so the Hugging Face cache,
   ``HF_HUB_OFFLINE=1`` and ``revision`` work as usual), reads the files
   it names (its ``checksums`` and the ``Pretrainer`` paths) without
   building any network, and fetches each into ``savedir``.

Whatever the source, the resulting folder is loaded by the one loader,
:func:`speechbrain_elbo.export.load_folder`, which checks the SHA-256 of
every checkpoint; the hub adds no second loader. A hub problem (unknown
id or revision, a file missing from the repository, no network, offline
mode without the files in the cache) is one
:class:`~speechbrain_elbo.export.ModelFolderError` line naming the problem
and the fix.

Example
-------
>>> from speechbrain_elbo.pretrained import pretrained_path
>>> resolve_source("minivb-small").kind
'bundled'
>>> resolve_source(pretrained_path("minivb-small")).kind
'folder'
>>> is_hub_id("org/name"), is_hub_id("./model"), is_hub_id("a/b/c")
(True, False, False)
"""

import pathlib
import re
from types import SimpleNamespace

from speechbrain_elbo.export import HPARAMS_FILE, ModelFolderError

__all__ = ["is_hub_id", "hub_files", "fetch_from_hub", "resolve_source"]

#: ``org/name``: one slash, Hugging Face's characters for each part.
_HUB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")

#: How ``hyperparams.yaml`` names the folder it is loaded from.
_PRETRAINED_PATH = "<pretrained_path>/"


def is_hub_id(source):
    """Whether ``source`` has the form of a Hugging Face Hub id ``org/name``.

    Only strings qualify: a ``pathlib.Path`` is always a local path.

    Example
    -------
    >>> is_hub_id("speechbrain/sepformer-wham"), is_hub_id("/tmp/model")
    (True, False)
    >>> is_hub_id(pathlib.Path("org/name"))
    False
    """
    return isinstance(source, str) and _HUB_ID.fullmatch(source) is not None


def _plain_yaml(path):
    """``hyperparams.yaml`` read as plain data: tags are ignored, nothing is
    built (a ``!ref <x>/y`` scalar stays the string ``<x>/y``)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def untagged(loader, _suffix, node):
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        return loader.construct_scalar(node)

    Loader.add_multi_constructor("!", untagged)
    try:
        with open(path, encoding="utf-8") as handle:
            data = yaml.load(handle, Loader=Loader)
    except yaml.YAMLError as error:
        raise ModelFolderError(
            f"{path} cannot be parsed as YAML ({error}). The file is "
            "corrupt; export and upload the model again."
        ) from error
    if not isinstance(data, dict):
        raise ModelFolderError(
            f"{path} is not a mapping: it was not written by "
            "export_enhancer; export and upload the model again."
        )
    return data


def hub_files(hparams_path):
    """The files a ``hyperparams.yaml`` names, relative to its folder.

    The keys of its ``checksums`` and the ``Pretrainer`` paths under
    ``<pretrained_path>/``, in order, without duplicates. The file is read
    as plain YAML: no network is built.

    Arguments
    ---------
    hparams_path : str or pathlib.Path
        A ``hyperparams.yaml`` written by
        :func:`speechbrain_elbo.export.export_enhancer`.

    Returns
    -------
    list of str

    Raises
    ------
    ModelFolderError
        If the file cannot be parsed, names no file, or names one outside
        its folder.

    Example
    -------
    >>> from speechbrain_elbo.pretrained import pretrained_path
    >>> hub_files(pretrained_path("minivb-small") / "hyperparams.yaml")
    ['score_model.ckpt', 'refiner.ckpt']
    """
    data = _plain_yaml(hparams_path)
    names = list((data.get("checksums") or {}).keys())
    pretrainer = data.get("pretrainer")
    paths = pretrainer.get("paths") if isinstance(pretrainer, dict) else None
    for path in (paths or {}).values():
        path = str(path)
        if path.startswith(_PRETRAINED_PATH):
            names.append(path[len(_PRETRAINED_PATH) :])
    files = list(dict.fromkeys(str(name) for name in names))
    if not files:
        raise ModelFolderError(
            f"{hparams_path} names no checkpoint file (no 'checksums' and "
            "no Pretrainer paths): it was not written by export_enhancer."
        )
    for name in files:
        parts = pathlib.PurePosixPath(name).parts
        if not parts or name.startswith("/") or ".." in parts:
            raise ModelFolderError(
                f"{hparams_path} names the file {name!r}, which is not "
                "inside the model folder; export the model again."
            )
    return files


def _where(repo_id, revision):
    return repo_id if revision is None else f"{repo_id} (revision {revision})"


def _hub_error(error, repo_id, revision, filename, hparams_file):
    """One clear :class:`ModelFolderError` for a failed hub fetch."""
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        EntryNotFoundError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    where = _where(repo_id, revision)
    what = (
        "its hyperparams.yaml"
        if filename == hparams_file
        else f"{filename} (named in its {hparams_file})"
    )
    if isinstance(error, LocalEntryNotFoundError):
        cache = constants.HF_HUB_CACHE
        if constants.HF_HUB_OFFLINE:
            problem = (
                f"Hub model {where}: {what} is not in the local Hugging "
                f"Face cache ({cache}) and offline mode is on "
                "(HF_HUB_OFFLINE=1)."
            )
        else:
            problem = (
                f"Hub model {where}: {what} could not be downloaded (no "
                f"connection to {constants.ENDPOINT}) and is not in the "
                f"local Hugging Face cache ({cache})."
            )
        if filename == hparams_file:
            fix = (
                "Check the id and revision, download the model once with "
                "network access, or pass a local model folder (no local "
                "folder of that name exists)."
            )
        else:
            fix = (
                "Download the model once with network access; if the "
                "repository lacks the file, upload the whole exported "
                "folder."
            )
        return ModelFolderError(f"{problem} {fix}")
    if isinstance(error, RepositoryNotFoundError):
        return ModelFolderError(
            f"No model {repo_id} on the Hugging Face Hub (or it is private "
            "or gated). Check the id, or log in (hf auth login); a local "
            "folder of that name does not exist either."
        )
    if isinstance(error, RevisionNotFoundError):
        return ModelFolderError(
            f"Hub model {repo_id} has no revision {revision!r}. Pass an "
            "existing branch, tag or commit as revision=."
        )
    if isinstance(error, EntryNotFoundError):
        if filename == hparams_file:
            return ModelFolderError(
                f"Hub model {where} has no {hparams_file}: it is not a "
                "model folder written by export_enhancer. Upload the whole "
                "exported folder."
            )
        return ModelFolderError(
            f"Hub model {where} lacks {what}: the upload is incomplete. "
            "Upload the whole exported folder."
        )
    if isinstance(error, HFValidationError):
        return ModelFolderError(
            f"{repo_id!r} is not a valid Hugging Face Hub id ({error}); "
            "pass org/name or a local model folder."
        )
    first = " ".join(str(error).split())
    return ModelFolderError(
        f"Hub model {where}: fetching {filename} failed "
        f"({type(error).__name__}: {first}). Check the network and retry, "
        "or pass a local model folder."
    )


def fetch_from_hub(
    repo_id,
    savedir=None,
    revision=None,
    hparams_file=HPARAMS_FILE,
    local_strategy=None,
):
    """Fetch an exported model folder from the Hugging Face Hub.

    ``hparams_file`` is fetched first through SpeechBrain's
    :func:`speechbrain.utils.fetching.fetch`, then every file it names
    (:func:`hub_files`). Files already in the Hugging Face cache are used
    from there; with ``HF_HUB_OFFLINE=1`` nothing but the cache is used.
    Checksums are not checked here:
    :func:`~speechbrain_elbo.export.load_folder` checks them when it loads
    the returned folder.

    Arguments
    ---------
    repo_id : str
        The Hub id, ``org/name``.
    savedir : str or pathlib.Path, optional
        Folder the files are linked (or copied) into; it is returned.
        Default None: the files stay in the Hugging Face cache and the
        cache's snapshot folder is returned.
    revision : str, optional
        Branch, tag or commit (default: ``main``).
    hparams_file : str
        Name of the hyperparameter file.
    local_strategy : speechbrain.utils.fetching.LocalStrategy, optional
        How files get into ``savedir``: ``SYMLINK`` (default) or ``COPY``.
        ``NO_LINK`` leaves them in the cache (as ``savedir=None``);
        ``COPY_SKIP_CACHE`` is treated as ``COPY`` (SpeechBrain 1.1.2
        passes ``hf_hub_download`` a ``local_dir_use_symlinks`` argument
        that recent ``huggingface_hub`` releases no longer accept).

    Returns
    -------
    pathlib.Path
        A folder holding ``hparams_file`` and the files it names.

    Raises
    ------
    ModelFolderError
        One line naming the problem (unknown id or revision, a missing
        file, no network, offline without the files cached) and the fix.
    """
    from speechbrain.utils.fetching import (
        FetchConfig,
        FetchFrom,
        FetchSource,
        LocalStrategy,
        fetch,
    )

    if not is_hub_id(repo_id):
        raise ModelFolderError(
            f"{repo_id!r} is not a Hugging Face Hub id; pass org/name."
        )
    strategy = local_strategy or LocalStrategy.SYMLINK
    if strategy == LocalStrategy.COPY_SKIP_CACHE:
        strategy = LocalStrategy.COPY
    if strategy == LocalStrategy.NO_LINK:
        savedir = None
    # a fetch into savedir always renews the link, so a reused savedir
    # never serves another model's (or revision's) file
    config = FetchConfig(overwrite=True, revision=revision)
    source = FetchSource(FetchFrom.HUGGING_FACE, repo_id)

    def fetch_one(filename):
        try:
            path = fetch(
                filename,
                source=source,
                savedir=savedir,
                local_strategy=strategy,
                fetch_config=config,
            )
        except Exception as error:
            raise _hub_error(
                error, repo_id, revision, filename, hparams_file
            ) from error
        return pathlib.Path(path)

    hparams_path = fetch_one(hparams_file)
    files = hub_files(hparams_path)
    paths = [fetch_one(name) for name in files]
    if savedir is not None:
        return pathlib.Path(savedir)
    folder = hparams_path.parent
    for name, path in zip(files, paths, strict=True):
        if path != folder / name:
            raise ModelFolderError(
                f"Hub model {_where(repo_id, revision)} changed while it "
                "was being fetched (its files come from different "
                "snapshots). Retry, or pin a commit with revision=."
            )
    return folder


def resolve_source(
    source,
    savedir=None,
    revision=None,
    hparams_file=HPARAMS_FILE,
    local_strategy=None,
):
    """The local folder to load for a ``from_hparams`` source.

    Decided once, in this order: an existing folder; a bundled model's
    name; a hub id ``org/name`` (fetched by :func:`fetch_from_hub`). A
    ``pathlib.Path`` is always a folder (a missing one is reported by
    :func:`~speechbrain_elbo.export.load_folder`).

    Arguments
    ---------
    source : str or pathlib.Path
        A folder, a bundled model's name, or a hub id.
    savedir : str or pathlib.Path, optional
        For a hub id: where the files are fetched to (see
        :func:`fetch_from_hub`).
    revision : str, optional
        Branch, tag or commit; hub ids only.
    hparams_file : str
        Name of the hyperparameter file.
    local_strategy : speechbrain.utils.fetching.LocalStrategy, optional
        For a hub id: how the files get into ``savedir``.

    Returns
    -------
    types.SimpleNamespace
        ``kind`` (``"folder"``, ``"bundled"`` or ``"hub"``) and ``folder``
        (a ``pathlib.Path``, ready for
        :func:`speechbrain_elbo.export.load_folder`).

    Raises
    ------
    FileNotFoundError
        If a string ``source`` is none of the three.
    ModelFolderError
        If the hub fetch fails.
    ValueError
        If ``revision`` is given for a source that is not a hub id.

    Example
    -------
    >>> resolve_source("no-such-model")
    Traceback (most recent call last):
    ...
    FileNotFoundError: Model folder no-such-model does not exist, and it is
    neither a bundled model ('minivb-small', ...) nor a Hugging Face Hub id
    (org/name). ...
    """
    from speechbrain_elbo import pretrained

    if pathlib.Path(source).expanduser().is_dir():
        kind, folder = "folder", pathlib.Path(source).expanduser()
    elif isinstance(source, str) and source in pretrained.available():
        kind, folder = "bundled", pretrained.pretrained_path(source)
    elif is_hub_id(source):
        folder = fetch_from_hub(
            source, savedir, revision, hparams_file, local_strategy
        )
        return SimpleNamespace(kind="hub", folder=folder)
    elif not isinstance(source, str):
        # a path: load_folder says that the folder does not exist
        kind, folder = "folder", pathlib.Path(source).expanduser()
    else:
        names = ", ".join(repr(n) for n in pretrained.available()) or "none"
        raise FileNotFoundError(
            f"Model folder {source} does not exist, and it is neither a "
            f"bundled model ({names}) nor a Hugging Face Hub id (org/name). "
            "Pass an exported model folder, a bundled name or a hub id."
        )
    if revision is not None:
        what = "a local folder" if kind == "folder" else "a bundled model"
        raise ValueError(
            f"revision={revision!r} applies to Hugging Face Hub ids only, "
            f"but {source} is {what}; drop revision."
        )
    return SimpleNamespace(kind=kind, folder=folder)
