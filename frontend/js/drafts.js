// Unsaved editor contents, per user and exercise, in IndexedDB: they survive reloads and crashes.

const DB_NAME = "taskwire";
const STORE = "drafts";

function open() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}

async function run(mode, action) {
  const db = await open();
  return new Promise((resolve, reject) => {
    const transaction = db.transaction(STORE, mode);
    const request = action(transaction.objectStore(STORE));
    transaction.oncomplete = () => resolve(request.result);
    transaction.onerror = () => reject(transaction.error);
  });
}

export const loadDraft = (userId, exerciseId) => run("readonly", (store) => store.get(`${userId}:${exerciseId}`));
export const saveDraft = (userId, exerciseId, code) =>
  run("readwrite", (store) => store.put({ ...code, savedAt: Date.now() }, `${userId}:${exerciseId}`));
export const clearDraft = (userId, exerciseId) => run("readwrite", (store) => store.delete(`${userId}:${exerciseId}`));
