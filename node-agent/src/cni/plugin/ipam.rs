//! host-local-compatible address management (being written; see the module's task).
