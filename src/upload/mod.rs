//! Edit uploads: multipart and JSON-form reference images, checked and held in bounded memory.
