"""Teacher caches: encode every training row once with a frozen teacher, then serve similarities.

    from teacher_cache import TeacherConfig, CacheDataConfig, ensure_cache, TeacherCache
    cache = TeacherCache.open(ensure_cache(TeacherConfig(), CacheDataConfig()))
    vectors = cache.text(cache.text_index(row_ids), device="cuda")
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
    index_input_shards,
)
from .integrity import CacheIntegrityError, verify_cache
from kdmcse_base.files import FolderBusyError, WriteFailedError
from kdmcse_base.torch_files import UnsafeFileError
from .reader import CacheFormatError, TeacherCache
from .towers import AUTO_PRECISION, DeviceUnavailableError, MissingCheckpointError, Teacher, TeacherConfig, build_teacher
from .writer import (
    DEFAULT_CACHE_ROOT,
    DEFAULT_SHARD_ROWS,
    BadInputError,
    BuildReport,
    CacheMismatchError,
    CollectedData,
    InputShardError,
    build_cache,
    cache_name,
    collect_data,
    ensure_cache,
    find_complete_cache,
    locate_cache,
    open_cache,
)

# A user's mistake in data, config or model paths: scripts print the one-line message and exit 2.
USER_ERRORS: tuple[type[Exception], ...] = (DataFormatError, BadInputError, MissingCheckpointError, DeviceUnavailableError,
                                            CacheIntegrityError, CacheFormatError, CacheMismatchError, FolderBusyError,
                                            WriteFailedError, UnsafeFileError, InputShardError)

__all__ = [
    "AUTO_PRECISION",
    "BadInputError",
    "FolderBusyError",
    "WriteFailedError",
    "BuildReport",
    "CacheDataConfig",
    "CacheFormatError",
    "CacheIntegrityError",
    "CacheMismatchError",
    "CacheRows",
    "CollectedData",
    "DataFormatError",
    "DEFAULT_CACHE_ROOT",
    "DEFAULT_SHARD_ROWS",
    "IMAGE_SOURCES",
    "ImageCaptionSource",
    "InputShardError",
    "MissingCheckpointError",
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
    "collect_data",
    "data_dir_for",
    "dataset_fingerprint",
    "ensure_cache",
    "find_complete_cache",
    "index_input_shards",
    "locate_cache",
    "open_cache",
    "verify_cache",
]
