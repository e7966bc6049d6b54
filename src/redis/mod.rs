//! Distributed limiting in Redis (feature `redis`). (Being written; see issue 6.)
