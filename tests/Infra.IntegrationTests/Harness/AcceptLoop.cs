using System.Net.Sockets;

namespace Infra.IntegrationTests.Harness;

/// <summary>The accept loop of the in-process test servers: each connection served on its own task until the listener stops.</summary>
internal static class AcceptLoop
{
    public static async Task RunAsync(TcpListener listener, Func<TcpClient, Task> serve, CancellationToken stop)
    {
        while (!stop.IsCancellationRequested)
        {
            TcpClient client;
            try
            {
                client = await listener.AcceptTcpClientAsync(stop);
            }
            catch (Exception ex) when (ex is OperationCanceledException or ObjectDisposedException or SocketException)
            {
                return;
            }

            _ = Task.Run(() => serve(client), CancellationToken.None);
        }
    }
}
