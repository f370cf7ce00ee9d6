//! The engine's number rules: rounding in the direction that never under-de-risks, five
//! significant figures for prices, and the coin a symbol trades. Used by every engine step.

/// Round up to 6 decimals (a hair of float noise is not rounded up).
pub(super) fn ceil6(x: f64) -> f64 {
    (x * 1e6 - 1e-6).ceil() / 1e6
}

/// Round down to 6 decimals (a hair of float noise is not rounded down).
pub(super) fn floor6(x: f64) -> f64 {
    (x * 1e6 + 1e-6).floor() / 1e6
}

/// Round to 6 decimals (coin sizes).
pub(super) fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

/// Round to cents (USD).
pub(super) fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Round to 4 decimals (leverage).
pub(super) fn round4(x: f64) -> f64 {
    (x * 1e4).round() / 1e4
}

/// Five significant figures.
pub(super) fn sig5(x: f64) -> f64 {
    if x <= 0.0 || !x.is_finite() {
        return 0.0;
    }
    let d = 4 - x.log10().floor() as i32;
    let m = 10f64.powi(d);
    (x * m).round() / m
}

/// The coin a symbol trades, for matching `symbols` against positions: `ETH-PERP`, `ETHUSDT`,
/// `ETH/USDC` and `ETH` are all `ETH`.
pub(super) fn coin_of(symbol: &str) -> String {
    let s = symbol.to_ascii_uppercase();
    let mut s = s.as_str();
    for suffix in [
        "-PERP", "PERP", "-USDT", "-USDC", "-USD", "/USDT", "/USDC", "/USD",
    ] {
        if let Some(x) = s.strip_suffix(suffix) {
            s = x;
            break;
        }
    }
    for suffix in ["USDT", "USDC"] {
        if let Some(x) = s.strip_suffix(suffix).filter(|x| !x.is_empty()) {
            s = x;
            break;
        }
    }
    s.to_string()
}
