"""STAMP (``srv6pm.stamp``): RFC 8762 / RFC 8972 / RFC 9503 Session-Sender and Session-Reflector."""
