//! Which tollgate algorithms this build ships, and how to pick the concrete type for a name.

use crate::spec::AlgoKind;

/// Whether tollgate ships `kind` (the windowed algorithms land in `tollgate::window`).
pub(crate) fn available(kind: AlgoKind) -> bool {
    matches!(kind, AlgoKind::Gcra)
}

/// Runs `$body` with the type alias `$A` naming the [`tollgate::Algorithm`] for `$kind`;
/// evaluates `$missing` for an algorithm this build does not ship.
macro_rules! with_algorithm {
    ($kind:expr, $A:ident => $body:expr, missing => $missing:expr) => {
        match $kind {
            $crate::spec::AlgoKind::Gcra => {
                type $A = tollgate::Gcra;
                $body
            }
            _ => $missing,
        }
    };
}
pub(crate) use with_algorithm;
