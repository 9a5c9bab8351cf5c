//! Kubernetes resource quantities.

/// A Kubernetes quantity as a number of base units (`"500m"` → 0.5, `"64Mi"` → 67108864,
/// `"1e3"` → 1000). `None` for anything malformed, negative or not finite.
pub fn quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s => {
            let exp = s.strip_prefix(['e', 'E'])?;
            10f64.powi(exp.parse().ok()?)
        }
    };
    let v = n * mult;
    (v.is_finite() && v >= 0.0).then_some(v)
}
