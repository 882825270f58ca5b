//! [`HostLimit`]: at most N requests at once to each host (a bulkhead per
//! origin), each holding its slot until its response body is done.
//!
//! The stack's concurrency limit bounds all hosts together: one slow host
//! can take every slot and leave none for the others. Here each
//! `scheme://authority` has slots of its own. The limit sits outside the
//! global one, and a request waiting for its host's slot does so without
//! a global slot: it calls a fresh clone of the services below once its
//! host has room, so a slow host's queue never holds what other hosts need.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use http_body::Body;
use pin_project_lite::pin_project;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::ServiceExt as _;
use tower::load_shed::error::Overloaded;
use tower_service::Service;

use super::held::{HeldBody, hold};
use super::layer::Overload;
use crate::BoxError;
use crate::util::with_authority_key;

/// Hosts tracked before the idle ones are forgotten: a host with no
/// request in flight or waiting has all its slots free, and a new
/// semaphore for it is the same. Enough for the hosts a client talks to at
/// once; a client crawling many hosts sweeps the table as it goes.
const SWEEP_AT: usize = 1024;

/// The slots of every host, shared by the clones of one stack.
#[derive(Debug)]
pub(crate) struct Hosts {
    per_host: usize,
    table: RwLock<Table>,
}

#[derive(Debug)]
struct Table {
    slots: HashMap<Arc<str>, Arc<Semaphore>>,
    /// The size at which idle hosts are next swept: twice what a sweep
    /// left, so that hosts all busy at once cost no sweep per request.
    sweep_at: usize,
}

impl Hosts {
    pub(crate) fn new(per_host: usize) -> Self {
        Hosts {
            per_host,
            table: RwLock::new(Table {
                slots: HashMap::new(),
                sweep_at: SWEEP_AT,
            }),
        }
    }

    /// The slots of the host `key`.
    fn slots(&self, key: &str) -> Arc<Semaphore> {
        let known = self
            .table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .slots
            .get(key)
            .cloned();
        if let Some(slots) = known {
            return slots;
        }
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(slots) = table.slots.get(key) {
            return slots.clone();
        }
        if table.slots.len() >= table.sweep_at {
            // Only the table holds an idle host's semaphore: every permit
            // and every waiter holds a reference of its own.
            table.slots.retain(|_, slots| Arc::strong_count(slots) > 1);
            table.sweep_at = (table.slots.len() * 2).max(SWEEP_AT);
        }
        let slots = Arc::new(Semaphore::new(self.per_host));
        table.slots.insert(Arc::from(key), slots.clone());
        slots
    }

    /// Hosts tracked now.
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.table.read().unwrap_or_else(PoisonError::into_inner).slots.len()
    }
}

/// The per-host limit over `S`.
#[derive(Debug, Clone)]
pub(crate) struct HostLimit<S> {
    inner: S,
    hosts: Arc<Hosts>,
    overload: Overload,
}

impl<S> HostLimit<S> {
    pub(crate) fn new(inner: S, hosts: Arc<Hosts>, overload: Overload) -> Self {
        HostLimit { inner, hosts, overload }
    }
}

/// A call that waits for its host's slot, then for the services below.
type Waiting<B> = Pin<Box<dyn Future<Output = Result<Response<HeldBody<B, OwnedSemaphorePermit>>, BoxError>> + Send>>;

pin_project! {
    /// Response future of [`HostLimit`].
    #[project = HostLimitProj]
    pub(crate) enum HostLimitFuture<F, B> {
        Calling { #[pin] future: F, slot: Option<OwnedSemaphorePermit> },
        Waiting { future: Waiting<B> },
        Shed,
    }
}

impl<S, ReqBody, B> Service<Request<ReqBody>> for HostLimit<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    B: Body + Send + 'static,
{
    type Response = Response<HeldBody<B, OwnedSemaphorePermit>>;
    type Error = BoxError;
    type Future = HostLimitFuture<S::Future, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        let slots = with_authority_key(request.uri(), |key| self.hosts.slots(key));
        if let Ok(slot) = slots.clone().try_acquire_owned() {
            return HostLimitFuture::Calling {
                future: self.inner.call(request),
                slot: Some(slot),
            };
        }
        let max_wait = self.overload.max_wait();
        if max_wait == Some(Duration::ZERO) {
            return HostLimitFuture::Shed;
        }
        // A fresh clone: the ready one keeps what its readiness reserved (a
        // global slot) for the next call, and this one asks for it only
        // once its host has room.
        let below = self.inner.clone();
        HostLimitFuture::Waiting {
            future: Box::pin(async move {
                // The semaphore is never closed.
                let slot = match max_wait {
                    None => slots.acquire_owned().await,
                    Some(wait) => tokio::time::timeout(wait, slots.acquire_owned())
                        .await
                        .map_err(|_| Overloaded::new())?,
                }
                .map_err(BoxError::from)?;
                let response = below.oneshot(request).await?;
                Ok(hold(response, Some(slot)))
            }),
        }
    }
}

impl<F, B> Future for HostLimitFuture<F, B>
where
    F: Future<Output = Result<Response<B>, BoxError>>,
    B: Body,
{
    type Output = Result<Response<HeldBody<B, OwnedSemaphorePermit>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            HostLimitProj::Calling { future, slot } => {
                let response = ready!(future.poll(cx))?;
                Poll::Ready(Ok(hold(response, slot.take())))
            }
            HostLimitProj::Waiting { future } => future.as_mut().poll(cx),
            HostLimitProj::Shed => Poll::Ready(Err(Box::new(Overloaded::new()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_hosts_are_forgotten_busy_ones_kept() {
        let hosts = Hosts::new(2);
        let busy = hosts.slots("http://busy.test").try_acquire_owned().unwrap();
        for n in 0..SWEEP_AT * 3 {
            drop(hosts.slots(&format!("http://host-{n}.test")));
        }
        assert!(hosts.tracked() <= SWEEP_AT + 1, "{}", hosts.tracked());
        // The busy host kept its semaphore: its one free slot is still the
        // only one.
        let again = hosts.slots("http://busy.test");
        assert_eq!(again.available_permits(), 1);
        drop(busy);
        assert_eq!(again.available_permits(), 2);
    }
}
