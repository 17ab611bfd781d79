//! The Duplex storage engine (filled by the engine issue).
