//! RESP and peer-link frame codecs (filled by the server issue).
