//! Phone numbers, one per business (incident 01): a leased claim before the
//! carrier is called, "already complete" afterwards, fencing of expired claims.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::state::TenantState;
use super::{Context, EventKind, Rejection, Rules, Text};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneState {
    /// A claim holds the right to buy a number until its lease expires (and
    /// after, until another claim takes over).
    Pending {
        claim_id: Uuid,
        lease_expires_at: DateTime<Utc>,
    },
    Active {
        claim_id: Uuid,
        phone_number: Text,
        provider_sid: Text,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Business {
    /// None: no number and no claim.
    pub phone: Option<PhoneState>,
    /// The last claim that failed, so that repeating its `fail` is a no-op.
    pub failed_claim: Option<Uuid>,
}

pub(super) fn decide_claim(
    tenant: Option<&TenantState>,
    business: &Text,
    claim_id: Uuid,
    rules: &Rules,
    context: &Context,
) -> Result<Vec<EventKind>, Rejection> {
    let current = tenant.and_then(|t| t.businesses.get(business)).and_then(|b| b.phone.as_ref());
    match current {
        Some(PhoneState::Active { .. }) => Ok(vec![]),
        Some(PhoneState::Pending { claim_id, lease_expires_at }) if context.now < *lease_expires_at => {
            Err(Rejection::PurchaseInProgress { claim_id: *claim_id, lease_expires_at: *lease_expires_at })
        }
        _ => Ok(vec![EventKind::PhoneClaimed { business: business.clone(), claim_id, lease_expires_at: context.now + rules.phone_lease }]),
    }
}

pub(super) fn decide_complete(
    tenant: Option<&TenantState>,
    business: &Text,
    claim_id: Uuid,
    phone_number: &Text,
    provider_sid: &Text,
) -> Result<Vec<EventKind>, Rejection> {
    let superseded = Rejection::ClaimSuperseded { claim_id };
    let current = tenant.and_then(|t| t.businesses.get(business)).and_then(|b| b.phone.as_ref());
    match current {
        Some(PhoneState::Active { claim_id: active, phone_number: number, provider_sid: sid }) => {
            if *active == claim_id && number == phone_number && sid == provider_sid { Ok(vec![]) } else { Err(superseded) }
        }
        Some(PhoneState::Pending { claim_id: pending, .. }) if *pending == claim_id => {
            if let Some(owner) = tenant.and_then(|t| t.phone_owners.get(phone_number))
                && owner != business
            {
                return Err(Rejection::PhoneNumberInUse { phone_number: phone_number.clone(), business: owner.clone() });
            }
            Ok(vec![EventKind::PhoneCompleted {
                business: business.clone(),
                claim_id,
                phone_number: phone_number.clone(),
                provider_sid: provider_sid.clone(),
            }])
        }
        _ => Err(superseded),
    }
}

pub(super) fn decide_fail(
    tenant: Option<&TenantState>,
    business: &Text,
    claim_id: Uuid,
    reason: &Text,
) -> Result<Vec<EventKind>, Rejection> {
    let record = tenant.and_then(|t| t.businesses.get(business));
    match record.and_then(|b| b.phone.as_ref()) {
        Some(PhoneState::Pending { claim_id: pending, .. }) if *pending == claim_id => {
            Ok(vec![EventKind::PhoneClaimFailed { business: business.clone(), claim_id, reason: reason.clone() }])
        }
        None if record.and_then(|b| b.failed_claim) == Some(claim_id) => Ok(vec![]),
        _ => Err(Rejection::ClaimSuperseded { claim_id }),
    }
}

pub(super) fn decide_release(tenant: Option<&TenantState>, business: &Text, reason: &Option<Text>) -> Result<Vec<EventKind>, Rejection> {
    match tenant.and_then(|t| t.businesses.get(business)).and_then(|b| b.phone.as_ref()) {
        None => Ok(vec![]),
        Some(PhoneState::Pending { claim_id, lease_expires_at }) => {
            Err(Rejection::PurchaseInProgress { claim_id: *claim_id, lease_expires_at: *lease_expires_at })
        }
        Some(PhoneState::Active { phone_number, .. }) => {
            Ok(vec![EventKind::PhoneReleased { business: business.clone(), phone_number: phone_number.clone(), reason: reason.clone() }])
        }
    }
}

pub(super) fn apply(tenant: &mut TenantState, kind: &EventKind) {
    match kind {
        EventKind::PhoneClaimed { business, claim_id, lease_expires_at } => {
            let record = tenant.businesses.entry(business.clone()).or_default();
            assert!(!matches!(record.phone, Some(PhoneState::Active { .. })), "a claim on a business with a number");
            record.phone = Some(PhoneState::Pending { claim_id: *claim_id, lease_expires_at: *lease_expires_at });
        }
        EventKind::PhoneCompleted { business, claim_id, phone_number, provider_sid } => {
            let record = tenant.businesses.get_mut(business).expect("completing a claimed business");
            assert!(
                matches!(record.phone, Some(PhoneState::Pending { claim_id: c, .. }) if c == *claim_id),
                "completing the current claim"
            );
            record.phone =
                Some(PhoneState::Active { claim_id: *claim_id, phone_number: phone_number.clone(), provider_sid: provider_sid.clone() });
            let previous = tenant.phone_owners.insert(phone_number.clone(), business.clone());
            assert!(previous.is_none_or(|owner| owner == *business), "one business per number");
        }
        EventKind::PhoneClaimFailed { business, claim_id, .. } => {
            let record = tenant.businesses.get_mut(business).expect("failing a claimed business");
            assert!(matches!(record.phone, Some(PhoneState::Pending { claim_id: c, .. }) if c == *claim_id), "failing the current claim");
            record.phone = None;
            record.failed_claim = Some(*claim_id);
        }
        EventKind::PhoneReleased { business, phone_number, .. } => {
            let record = tenant.businesses.get_mut(business).expect("releasing a business");
            assert!(matches!(&record.phone, Some(PhoneState::Active { phone_number: n, .. }) if n == phone_number), "releasing its number");
            record.phone = None;
            tenant.phone_owners.remove(phone_number);
        }
        _ => unreachable!("not a phone event"),
    }
}
