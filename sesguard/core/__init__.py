"""The domain core: partners, policy, jobs, S3 notifications, backoff, exit codes.

Pure: nothing here does I/O or imports another part of sesguard but `sesguard.errors`,
the error tree, which shares this layer (tests/test_layout.py).
"""
