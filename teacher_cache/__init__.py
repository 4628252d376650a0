"""Teacher caches: encode every training row once with a frozen teacher, then serve similarities.

    from teacher_cache import TeacherConfig, CacheDataConfig, ensure_cache, TeacherCache
    cache = TeacherCache.open(ensure_cache(TeacherConfig(), CacheDataConfig()))
    vectors = cache.text(cache.text_index(row_ids), device="cuda")
"""
from .data import IMAGE_SOURCES, TEXT_SOURCES, CacheDataConfig, CacheRows, collect_rows, dataset_fingerprint
from .integrity import CacheIntegrityError, verify_cache
from .reader import CacheFormatError, TeacherCache
from .towers import AUTO_PRECISION, MissingCheckpointError, Teacher, TeacherConfig, build_teacher
from .writer import (
    DEFAULT_CACHE_ROOT,
    DEFAULT_SHARD_ROWS,
    BadInputError,
    BuildReport,
    CollectedData,
    build_cache,
    cache_name,
    collect_data,
    ensure_cache,
    find_complete_cache,
    locate_cache,
)

__all__ = [
    "AUTO_PRECISION",
    "BadInputError",
    "BuildReport",
    "CacheDataConfig",
    "CacheFormatError",
    "CacheIntegrityError",
    "CacheRows",
    "CollectedData",
    "DEFAULT_CACHE_ROOT",
    "DEFAULT_SHARD_ROWS",
    "IMAGE_SOURCES",
    "MissingCheckpointError",
    "TEXT_SOURCES",
    "Teacher",
    "TeacherCache",
    "TeacherConfig",
    "build_cache",
    "build_teacher",
    "cache_name",
    "collect_rows",
    "collect_data",
    "dataset_fingerprint",
    "ensure_cache",
    "find_complete_cache",
    "locate_cache",
    "verify_cache",
]
