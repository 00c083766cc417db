"""The quarantine: messages held back by policy (DMARC p=reject by default), kept in the store
until an admin releases them into the mailbox or deletes them."""
