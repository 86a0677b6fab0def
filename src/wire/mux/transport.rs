//! The lock operations on the multiplexed connections.

use super::*;

impl Transport for AsyncBackend {
    fn address(&self) -> &str {
        &self.address
    }

    async fn add(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: u32,
        lock_delay: Duration,
    ) -> Outcome<Added> {
        self.store(Store::Add, key, value, ttl, lock_delay).await
    }

    async fn add_fenced(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: u32,
        fence_key: &[u8],
        initial: u64,
        lock_delay: Duration,
    ) -> Outcome<(Added, Outcome<u64>)> {
        let link = self.link().await?;
        if let Some(remaining) = link.session.delayed(lock_delay) {
            let skipped = Failure::Unavailable("lock-delay: nothing sent".into());
            return Ok((Added::Delayed { remaining }, Err(skipped)));
        }
        let batch = [
            Op::Store {
                mode: Store::Add,
                key,
                value,
                ttl,
            },
            Op::Increment {
                key: fence_key,
                initial,
            },
        ];
        let replies = self.run(&link, &batch).await?;
        let added = ops::added(first(&replies)?, link.session.epoch)?;
        let fence = replies
            .get(1)
            .map(|reply| ops::counted(reply.reply()))
            .unwrap_or_else(|| Err(Failure::Protocol("fence counter reply missing".into())));
        Ok((added, fence))
    }

    async fn next_fence(&self, fence_key: &[u8], initial: u64) -> Outcome<u64> {
        let link = self.link().await?;
        let op = Op::Increment {
            key: fence_key,
            initial,
        };
        let replies = self.run(&link, &[op]).await?;
        ops::counted(first(&replies)?)
    }

    async fn bump(
        &self,
        key: &[u8],
        delta: u64,
        create: Option<(u64, u32)>,
    ) -> Outcome<Option<u64>> {
        let link = self.link().await?;
        for _ in 0..ops::CREATE_TRIES {
            let op = Op::Bump { key, delta, create };
            let bumped = ops::bumped(first(&self.run(&link, &[op]).await?)?)?;
            // Meta created it already (`J`); classic creates it here.
            let (None, Some((initial, ttl)), Dialect::Classic) =
                (bumped, create, link.session.dialect)
            else {
                return Ok(bumped);
            };
            let value = initial.to_string();
            let add = Op::Store {
                mode: Store::Add,
                key,
                value: value.as_bytes(),
                ttl,
            };
            if ops::created(first(&self.run(&link, &[add]).await?)?)? {
                return Ok(Some(initial));
            }
        }
        Err(Failure::Unavailable(
            "the counter vanished between incr and add".into(),
        ))
    }

    async fn overwrite(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: u32,
        lock_delay: Duration,
    ) -> Outcome<Added> {
        self.store(Store::Set, key, value, ttl, lock_delay).await
    }

    async fn read(&self, key: &[u8]) -> Outcome<Option<Item>> {
        let link = self.link().await?;
        let replies = self.run(&link, &[Op::Read { key }]).await?;
        ops::item(first(&replies)?, link.session.epoch)
    }

    async fn read_many(&self, keys: &[Vec<u8>]) -> Outcome<Vec<Option<Item>>> {
        let link = self.link().await?;
        let batch: Vec<Op<'_>> = keys.iter().map(|key| Op::Read { key }).collect();
        let replies = self.run(&link, &batch).await?;
        if replies.len() != keys.len() {
            return Err(Failure::Protocol("replies missing".into()));
        }
        replies
            .iter()
            .map(|reply| ops::item(reply.reply(), link.session.epoch))
            .collect()
    }

    async fn delete_if(&self, key: &[u8], cas: u64, epoch: Option<Epoch>) -> Outcome<Checked> {
        self.checked(Op::DeleteIf { key, cas }, epoch).await
    }

    async fn replace_if(
        &self,
        key: &[u8],
        value: &[u8],
        cas: u64,
        ttl: u32,
        epoch: Option<Epoch>,
    ) -> Outcome<Checked> {
        let op = Op::Store {
            mode: Store::IfCas(cas),
            key,
            value,
            ttl,
        };
        self.checked(op, epoch).await
    }

    async fn ping(&self) -> Outcome<Pong> {
        let link = self.link().await?;
        let started = Instant::now();
        let replies = self.run(&link, &[Op::Noop]).await?;
        ops::noop(first(&replies)?)?;
        let round_trip = started.elapsed();
        let session = &link.session;
        Ok(Pong {
            round_trip,
            version: session.version.clone(),
            dialect: session.dialect.as_str(),
            tls: session.tls,
            auth: session.auth,
        })
    }
}
