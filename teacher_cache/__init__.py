"""Teacher caches: encode every training row once with a frozen teacher, then serve similarities.

    from teacher_cache import TeacherConfig, CacheDataConfig, ensure_cache, TeacherCache
    cache = TeacherCache.open(ensure_cache(TeacherConfig(), CacheDataConfig()))
    targets = cache.targets(cache.text_index(row_ids), cache.image_index(image_ids), device="cuda")
"""
from .corpora import DataFormatError
from .data import (
    IMAGE_SOURCES,
    TEXT_SOURCES,
    CacheDataConfig,
    CacheRows,
    ImageCaptionSource,
    TextSource,
    collect_rows,
    data_dir_for,
    dataset_fingerprint,
)
from .reader import CacheFormatError, SoftTargets, TeacherCache
from .towers import (
    AUTO_PRECISION,
    CrossModalUnavailableError,
    MissingCheckpointError,
    Teacher,
    TeacherConfig,
    build_teacher,
    cross_modal_similarity,
)
from .writer import (
    DEFAULT_CACHE_ROOT,
    DEFAULT_SHARD_ROWS,
    BadInputError,
    BuildReport,
    CacheIntegrityError,
    build_cache,
    cache_name,
    ensure_cache,
    locate_cache,
    verify_cache,
)

# A user's mistake in data, config or model paths: scripts print the one-line message and exit 2.
USER_ERRORS: tuple[type[Exception], ...] = (DataFormatError, BadInputError, MissingCheckpointError)

__all__ = [
    "AUTO_PRECISION",
    "BadInputError",
    "BuildReport",
    "CacheDataConfig",
    "CacheFormatError",
    "CacheIntegrityError",
    "CacheRows",
    "CrossModalUnavailableError",
    "DataFormatError",
    "DEFAULT_CACHE_ROOT",
    "DEFAULT_SHARD_ROWS",
    "IMAGE_SOURCES",
    "ImageCaptionSource",
    "MissingCheckpointError",
    "SoftTargets",
    "TEXT_SOURCES",
    "TextSource",
    "USER_ERRORS",
    "Teacher",
    "TeacherCache",
    "TeacherConfig",
    "build_cache",
    "build_teacher",
    "cache_name",
    "collect_rows",
    "cross_modal_similarity",
    "data_dir_for",
    "dataset_fingerprint",
    "ensure_cache",
    "locate_cache",
    "verify_cache",
]
