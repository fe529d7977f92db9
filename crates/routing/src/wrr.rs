//! Smooth weighted round robin, precomputed into a table.
//!
//! The table is built once per snapshot; picking is then one relaxed
//! `fetch_add` and an index, with no lock. Over any window of `len()`
//! consecutive picks each entry appears exactly in proportion to its weight,
//! so 95/5 sends exactly 5 of every 100 requests to the canary.

/// Tables longer than this are scaled down (weights divided) to keep memory
/// bounded; the split then follows the weights to within 1/65536.
pub const MAX_TABLE: u64 = 65_536;

/// The interleaved sequence of indices for `weights` (nginx's smooth weighted
/// round robin), reduced by the weights' gcd. Zero weights never appear.
/// Returns an empty table when every weight is zero.
pub fn smooth_table(weights: &[u32]) -> Vec<u32> {
    let g = weights.iter().copied().filter(|&w| w > 0).fold(0u32, gcd);
    if g == 0 {
        return Vec::new();
    }
    let mut w: Vec<u64> = weights.iter().map(|&x| u64::from(x / g)).collect();
    let total: u64 = w.iter().sum();
    if total > MAX_TABLE {
        // Proportional scale-down, keeping every non-zero weight at least 1.
        for x in &mut w {
            if *x > 0 {
                *x = (*x * MAX_TABLE / total).max(1);
            }
        }
    }
    let total: i64 = w.iter().map(|&x| x as i64).sum();
    let mut current = vec![0i64; w.len()];
    let mut table = Vec::with_capacity(total as usize);
    for _ in 0..total {
        let mut best = usize::MAX;
        for (i, &wi) in w.iter().enumerate() {
            if wi == 0 {
                continue;
            }
            current[i] += wi as i64;
            if best == usize::MAX || current[i] > current[best] {
                best = i;
            }
        }
        if best == usize::MAX {
            break;
        }
        current[best] -= total;
        table.push(best as u32);
    }
    table
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(table: &[u32], n: usize, picks: usize) -> Vec<usize> {
        let mut c = vec![0; n];
        for i in 0..picks {
            c[table[i % table.len()] as usize] += 1;
        }
        c
    }

    #[test]
    fn ninety_five_five_is_exact_over_100_and_1000() {
        let t = smooth_table(&[95, 5]);
        assert_eq!(t.len(), 20, "reduced by gcd");
        assert_eq!(counts(&t, 2, 100), vec![95, 5]);
        assert_eq!(counts(&t, 2, 1000), vec![950, 50]);
    }

    #[test]
    fn odd_weights_are_exact_and_interleaved() {
        let t = smooth_table(&[5, 1, 1]);
        assert_eq!(t, vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(counts(&smooth_table(&[3, 7]), 2, 1000), vec![300, 700]);
        assert_eq!(counts(&smooth_table(&[1, 999]), 2, 1000), vec![1, 999]);
    }

    #[test]
    fn zero_weight_gets_nothing() {
        let t = smooth_table(&[0, 10, 0]);
        assert!(t.iter().all(|&i| i == 1));
        assert!(smooth_table(&[0, 0]).is_empty());
    }

    #[test]
    fn huge_tables_are_bounded() {
        let weights: Vec<u32> = (0..1000).map(|i| 1000 - (i % 7)).collect();
        let t = smooth_table(&weights);
        assert!(t.len() as u64 <= MAX_TABLE + 1000);
        let c = counts(&t, 1000, t.len());
        assert!(c.iter().all(|&x| x > 0));
    }
}
