//! Which tollgate algorithms this build ships, and how to pick the concrete type for a name.

use crate::spec::AlgoKind;

/// Whether tollgate ships `kind` (all four since `tollgate::window` landed; kept so a build
/// without an algorithm rejects its name with a clear message instead of failing later).
pub(crate) fn available(kind: AlgoKind) -> bool {
    matches!(kind, AlgoKind::Gcra | AlgoKind::Fixed | AlgoKind::Sliding | AlgoKind::Log)
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
            $crate::spec::AlgoKind::Fixed => {
                type $A = tollgate::FixedWindow;
                $body
            }
            $crate::spec::AlgoKind::Sliding => {
                type $A = tollgate::SlidingWindow;
                $body
            }
            $crate::spec::AlgoKind::Log => {
                type $A = tollgate::SlidingLog;
                $body
            }
            #[allow(unreachable_patterns)]
            _ => $missing,
        }
    };
}
pub(crate) use with_algorithm;
