// Shows the orders `GET /orders/live` pushes, newest first, reconnecting when the feed drops.
const state = document.getElementById("state");
const rows = document.getElementById("orders");

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss:" : "ws:";
  const ws = new WebSocket(`${scheme}//${location.host}/orders/live`);
  ws.onopen = () => { state.textContent = "connected"; };
  ws.onmessage = (event) => {
    const order = JSON.parse(event.data);
    const tr = document.createElement("tr");
    tr.append(
      cell(order.orderId),
      cell(order.productId),
      cell(String(order.quantity)),
      cell(`$${(order.totalCents / 100).toFixed(2)}`),
    );
    rows.prepend(tr);
  };
  ws.onclose = () => {
    state.textContent = "reconnecting…";
    setTimeout(connect, 1000);
  };
}

connect();
