//! Amounts of money: integers of minor units (kopecks, cents), never floats.
//!
//! An amount — a price, a line's total, an order's total — is 0 to [`MAX_AMOUNT`]:
//! 2^53 − 1, the largest integer every JSON reader holds exactly (I-JSON, RFC 7493).
//! Sums of many such amounts (a month's spend in the analytics) stay far inside 64 bits
//! for any real history, and no multiplication of a price by a quantity can wrap.

/// The largest amount, in minor units: 2^53 − 1.
pub const MAX_AMOUNT: i64 = (1 << 53) - 1;

/// `unit_price × quantity` when both are valid and the product is an amount; `None`
/// otherwise (negative price, or beyond [`MAX_AMOUNT`]).
pub fn line_total(unit_price: i64, quantity: u32) -> Option<i64> {
    if !(0..=MAX_AMOUNT).contains(&unit_price) {
        return None;
    }
    unit_price
        .checked_mul(i64::from(quantity))
        .filter(|total| *total <= MAX_AMOUNT)
}

/// The sum of amounts, when it is an amount.
pub fn sum(amounts: impl IntoIterator<Item = i64>) -> Option<i64> {
    amounts.into_iter().try_fold(0i64, |acc, a| {
        acc.checked_add(a).filter(|total| *total <= MAX_AMOUNT)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_totals_stay_amounts() {
        assert_eq!(line_total(1_000, 3), Some(3_000));
        assert_eq!(line_total(MAX_AMOUNT, 1), Some(MAX_AMOUNT));
        assert_eq!(line_total(MAX_AMOUNT, 2), None);
        assert_eq!(line_total(MAX_AMOUNT + 1, 1), None);
        assert_eq!(line_total(i64::MAX, u32::MAX), None);
        assert_eq!(line_total(-1, 1), None);
        assert_eq!(line_total(0, u32::MAX), Some(0));
    }

    #[test]
    fn sums_stay_amounts() {
        assert_eq!(sum([1, 2, 3]), Some(6));
        assert_eq!(sum([MAX_AMOUNT, 1]), None);
        assert_eq!(sum([]), Some(0));
    }
}
