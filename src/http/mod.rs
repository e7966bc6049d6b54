//! tower/axum middleware (features `tower`, `axum`). (Being written; see issue 7.)
